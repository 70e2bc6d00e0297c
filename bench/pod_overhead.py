"""What a pod VM's QEMU costs beside what the pod asked for: the figures behind the `hypervm`
RuntimeClass's `overhead.podFixed` (hypernetes/api/registry/node/runtimeclass.py, issue 15).

Per pod (a 128 MiB `sleep` pod, a clone of its shape's template, as a node starts pods; the VM's
cgroup with no CPU cap worth the name, 2 CPUs, so the start is not throttled):
- CPU: the CPU seconds the VM's cgroup used from the sandbox's creation to the container's first
  output (restore, SETUP with the disks re-probed, CREATE: the VMM's and the guest's work of a
  start), and the wall time it took;
- memory, after `--idle` seconds idle: the cgroup's working set (usage less inactive file cache,
  as the kubelet counts it) and QEMU's own resident memory outside the guest's RAM (anonymous
  memory: TCG's code cache, heap, stacks; QEMU's binary and libraries), RSS and PSS, against the
  guest's RAM mapping.

Run as root after `make setup`: `.venv/bin/python bench/pod_overhead.py --pods 6`.
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

from bench.startup import image_and_template_dirs, start_idle  # noqa: E402
from bench.templates import loadavg  # noqa: E402
from hypernetes.runtime import cgroups as cg  # noqa: E402
from hypernetes.runtime.hypervm import HyperVM  # noqa: E402
from hypernetes.runtime.images import ImageStore  # noqa: E402
from hypernetes.runtime.kernels import KernelRegistry  # noqa: E402
from hypernetes.runtime.paths import agent_binary  # noqa: E402
from hypernetes.runtime.qemu import running_qemu  # noqa: E402
from hypernetes.runtime.templates import TemplateStore  # noqa: E402

MiB = 1 << 20


def by_kind(pid: int) -> dict[str, float]:
    """RSS and PSS (MiB) of one QEMU by mapping: the guest's RAM (its `ram` file or anonymous
    `-m` memory is the largest mapping), everything else (QEMU's own)."""
    maps: list[tuple[str, int, int, int]] = []  # (name, size kB, rss kB, pss kB)
    name, size, rss, pss = "", 0, 0, 0
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        first = line.split(maxsplit=1)[0]
        if "-" in first and not first.endswith(":"):
            if name or size:
                maps.append((name, size, rss, pss))
            fields = line.split()
            name, size, rss, pss = (fields[5] if len(fields) > 5 else ""), 0, 0, 0
        elif first == "Size:":
            size = int(line.split()[1])
        elif first == "Rss:":
            rss = int(line.split()[1])
        elif first == "Pss:":
            pss = int(line.split()[1])
    maps.append((name, size, rss, pss))
    ram = max(maps, key=lambda m: m[1])  # the guest's RAM is by far the largest mapping
    own = [m for m in maps if m is not ram]
    return {
        "guest_ram_rss_mib": round(ram[2] / 1024, 1),
        "qemu_own_rss_mib": round(sum(m[2] for m in own) / 1024, 1),
        "qemu_own_pss_mib": round(sum(m[3] for m in own) / 1024, 1),
        "qemu_own_anon_rss_mib": round(sum(m[2] for m in own if not m[0].startswith("/")) / 1024, 1),
    }


def cpu_seconds(groups: cg.Cgroups, name: str) -> float:
    usage = groups.usage(name)
    return usage.cpu_ns / 1e9 if usage is not None else float("nan")


async def one(runtime: HyperVM, name: str, idle: float) -> dict[str, float]:
    groups = runtime._confiner.cgroups
    assert groups is not None, "needs root and cgroups"
    cgname = cg.cgroup_name(name, runtime.root / name)
    t0 = time.monotonic()
    # 2 vCPUs' quota: the start is not throttled
    await start_idle(runtime, name, memory_limit=128 * MiB, cpu_limit_millis=2000)
    row: dict[str, float] = {
        "start_s": round(time.monotonic() - t0, 3),
        "start_cpu_s": round(cpu_seconds(groups, cgname), 3),
    }
    await asyncio.sleep(idle)
    usage = groups.usage(cgname)
    pid = running_qemu(runtime.root / name)
    assert usage is not None and pid is not None
    row["cgroup_working_set_mib"] = round(usage.memory_working_set / MiB, 1)
    row.update(by_kind(pid))
    await runtime.remove_sandbox(name)
    return row


async def run(data: Path, tpl_root: Path, pods: int, idle: float) -> None:
    runtime = HyperVM(
        data / "rt",
        ImageStore(data / "images"),
        KernelRegistry(data / "kernels", agent_binary()),
        accel="tcg",
        templates=TemplateStore(tpl_root),
    )
    templates = runtime.templates
    assert templates is not None
    await one(runtime, "warm", 0)  # builds the shape's template (this one boots cold)
    await templates.wait_built()
    rows = []
    for i in range(pods):
        row = await one(runtime, f"p{i}", idle)
        rows.append(row)
        print(json.dumps({"pod": i, **row, "loadavg": loadavg()}), flush=True)
    out = {k: round(statistics.median(r[k] for r in rows), 3) for k in rows[0]}
    out |= {f"{k}_max": max(r[k] for r in rows) for k in ("start_cpu_s", "qemu_own_rss_mib")}
    print(json.dumps({"bench": "pod_overhead", "pods": pods, **out}), flush=True)
    await templates.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pods", type=int, default=6)
    parser.add_argument("--idle", type=float, default=5.0)
    args = parser.parse_args()
    print(json.dumps({"loadavg_start": loadavg()}), flush=True)
    with image_and_template_dirs("hn-bench-overhead-") as (data, tpl):
        asyncio.run(run(data, tpl, args.pods, args.idle))
    print(json.dumps({"loadavg_end": loadavg()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
