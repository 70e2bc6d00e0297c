"""Memory of a clone under TCG (issue 15): what the translated-code cache size costs and saves.

For each `-accel tcg,tb-size=N` (qemu.TCG_TB_MIB) in ABBA order: the in-process start of a clone
(create the sandbox, `echo first`, its first output) and the host PSS per pod of `--pods` idle
`sleep` clones (128 MiB VMs) running at once, split by where it lies in QEMU's address space
(anonymous memory, which holds the code cache; the template's RAM file; QEMU's binary and
libraries). One template serves every N: the code cache is not part of a VM's saved state.

Run as root after `make setup`: `.venv/bin/python bench/clone_memory.py --tb 4 --tb 16`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.startup import image_and_template_dirs, pids_matching, start_idle  # noqa: E402
from bench.templates import loadavg, start_once  # noqa: E402
from hypernetes.runtime import qemu  # noqa: E402
from hypernetes.runtime.hypervm import HyperVM  # noqa: E402
from hypernetes.runtime.images import ImageStore  # noqa: E402
from hypernetes.runtime.kernels import KernelRegistry  # noqa: E402
from hypernetes.runtime.paths import agent_binary  # noqa: E402
from hypernetes.runtime.templates import TemplateStore  # noqa: E402


def pss_by_kind(pid: int) -> dict[str, float]:
    """PSS in KiB of one process by mapping kind: anon (heap, code cache, stacks), ram (the
    guest's RAM file: the template's pages it maps plus its private copies), lib (files)."""
    kinds = {"anon": 0.0, "ram": 0.0, "lib": 0.0}
    kind = "anon"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        first = line.split(maxsplit=1)[0]
        if "-" in first and not first.endswith(":"):  # a mapping's header line
            name = line.split()[5] if len(line.split()) > 5 else ""
            kind = "ram" if name.endswith("/ram") else "lib" if name.startswith("/") else "anon"
        elif first == "Pss:":
            kinds[kind] += int(line.split()[1])
    return kinds


async def idle_clones(runtime: HyperVM, prefix: str, count: int) -> dict[str, float]:
    names = [f"{prefix}-{i:03d}" for i in range(count)]
    try:
        for name in names:
            await start_idle(runtime, name)
        await asyncio.sleep(3)  # idle
        totals = {"anon": 0.0, "ram": 0.0, "lib": 0.0}
        for name in names:
            for pid in pids_matching(name):
                for kind, kib in pss_by_kind(pid).items():
                    totals[kind] += kib
        return {k: round(v / count / 1024, 1) for k, v in totals.items()} | {
            "total": round(sum(totals.values()) / count / 1024, 1)
        }
    finally:
        for name in names:
            await runtime.remove_sandbox(name)


async def run(data: Path, tpl_root: Path, sizes: list[int], rounds: int, pods: int) -> None:
    store = ImageStore(data / "images")
    kernels = KernelRegistry(data / "kernels", agent_binary())
    templates = TemplateStore(tpl_root)
    runtime = HyperVM(data / "rt", store, kernels, accel="tcg", templates=templates)
    await idle_clones(runtime, "warm", 1)  # builds the 128 MiB shape's template (boots cold)
    await templates.wait_built()
    await start_once(runtime, "warm-echo")  # and the echo pod's shape
    await templates.wait_built()
    starts: dict[int, list[float]] = {n: [] for n in sizes}
    memory: dict[int, list[dict[str, float]]] = {n: [] for n in sizes}
    for r in range(rounds):
        for n in sizes if r % 2 == 0 else list(reversed(sizes)):
            qemu.TCG_TB_MIB = n
            for i in range(3):
                t = await start_once(runtime, f"s{r}-{n}-{i}")
                if t is not None:
                    starts[n].append(t)
            row = await idle_clones(runtime, f"m{r}-{n}", pods)
            memory[n].append(row)
            print(json.dumps({"tb_mib": n, "round": r, **row, "loadavg": loadavg()}), flush=True)
    print(f"\n| tb-size MiB | start p50 s | PSS/pod MiB ({pods} idle clones) | anon | ram | lib |")
    print("|---|---|---|---|---|---|")
    for n in sizes:
        mean = {k: round(statistics.mean(m[k] for m in memory[n]), 1) for k in memory[n][0]}
        p50 = statistics.median(starts[n]) if starts[n] else float("nan")
        print(f"| {n} | {p50:.3f} | {mean['total']} | {mean['anon']} | {mean['ram']} | {mean['lib']} |")
    await templates.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tb", type=int, action="append", help="tb-size MiB to try (repeat)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--pods", type=int, default=4)
    args = parser.parse_args()
    print(json.dumps({"loadavg_start": loadavg()}), flush=True)
    with image_and_template_dirs("hn-bench-clonemem-") as (data, tpl):
        asyncio.run(run(data, tpl, args.tb or [2, 4, 8, 16], args.rounds, args.pods))
    print(json.dumps({"loadavg_end": loadavg()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
