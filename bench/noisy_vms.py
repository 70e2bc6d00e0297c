"""A quiet pod VM next to CPU-spinning neighbours: its exec latency with and without them, with
each VM in its own cgroup (jailed, as the node runs them as root) and without (as before issue 12).

Prints one JSON object per slice and per summary, then a Markdown table on stderr.

Per configuration (confined, unconfined): a fresh HyperVM runtime; one quiet pod (1 vCPU) and
`--spinners` hostile pods (1 vCPU each, no CPU request or limit: the VM's vCPU is all they may
take; the quiet pod requests `--quiet-cpu-request`, its weight when confined) whose
container spins only while /tmp/spin says 1, so that the neighbour is switched on and off by an
exec instead of VM boots. Slices of `--execs` execs of `true` in the quiet pod, alone and beside
the spinning neighbours, in ABBA order, `--rounds` times; medians of the slices' p50 and p99.

Run as root after `make setup`: `.venv/bin/python bench/noisy_vms.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hypernetes.runtime.hypervm import HyperVM  # noqa: E402
from hypernetes.runtime.images import ImageStore  # noqa: E402
from hypernetes.runtime.interface import ContainerSpec, ExecSpec, PodSpec  # noqa: E402
from hypernetes.runtime.kernels import KernelRegistry  # noqa: E402
from hypernetes.runtime.paths import agent_binary  # noqa: E402
from tools.imagebuild import OciLayout, busybox_image  # noqa: E402

IMAGE = "localhost/busybox:noisy"
CLI = str(REPO / ".venv" / "bin" / "hypernetes")
# shell builtins only while spinning: all of it is the guest's CPU, no forks
SPIN = 'while :; do read -r on < /tmp/spin; if [ "$on" = 1 ]; then :; else sleep 0.2; fi; done 2>/dev/null'


def pod(pid: str, command: str, cpu_request: int | None) -> PodSpec:
    main = ContainerSpec(
        name="main",
        image=IMAGE,
        command=("sh", "-c", command),
        memory_limit=64 << 20,
        cpu_request_millis=cpu_request,
    )
    return PodSpec(id=pid, name=pid, containers=(main,), termination_grace_seconds=1)


async def run(runtime: HyperVM, pid: str, *command: str) -> float:
    start = time.perf_counter()
    proc = await runtime.exec(pid, "main", ExecSpec(command=command))
    await asyncio.wait_for(proc.wait(), 60)
    return time.perf_counter() - start


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def configuration(
    name: str, data: Path, kernels: KernelRegistry, args: argparse.Namespace
) -> dict[str, object]:
    # "unconfined": as before per-VM confinement existed, no uid, jail or cgroup per VM
    confine = None if name == "confined" else False
    images = ImageStore(data / "images")
    runtime = HyperVM(data / name, images, kernels, die_with_parent=True, confine=confine)
    pods = ["quiet", *(f"spin{i}" for i in range(args.spinners))]
    try:
        for pid in pods:
            quiet = pid == "quiet"
            await runtime.create_sandbox(
                pod(pid, "sleep 3600" if quiet else SPIN, args.quiet_cpu_request if quiet else None)
            )
            await runtime.start_container(pid, "main")
        for _ in range(5):  # warm the quiet VM's exec path
            await run(runtime, "quiet", "true")
        slices: dict[str, list[tuple[float, float]]] = {"alone": [], "beside": []}
        for _ in range(args.rounds):
            for phase in ("alone", "beside", "beside", "alone"):  # ABBA
                switch = ("sh", "-c", f"echo {int(phase == 'beside')} > /tmp/spin")
                for pid in pods[1:]:
                    await run(runtime, pid, *switch)
                await asyncio.sleep(1.0)  # the neighbours reach (or leave) their spin
                times = [await run(runtime, "quiet", "true") for _ in range(args.execs)]
                p50, p99 = percentile(times, 0.5) * 1000, percentile(times, 0.99) * 1000
                slices[phase].append((p50, p99))
                print(
                    json.dumps(
                        {
                            "bench": "noisy_vms",
                            "config": name,
                            "phase": phase,
                            "p50_ms": round(p50, 2),
                            "p99_ms": round(p99, 2),
                        }
                    ),
                    flush=True,
                )
        out: dict[str, object] = {"bench": "noisy_vms_summary", "config": name}
        for phase, values in slices.items():
            out[f"{phase}_p50_ms"] = round(statistics.median(v[0] for v in values), 2)
            out[f"{phase}_p99_ms"] = round(statistics.median(v[1] for v in values), 2)
        out["ratio_p50"] = round(float(out["beside_p50_ms"]) / float(out["alone_p50_ms"]), 2)  # type: ignore[arg-type]
        out["ratio_p99"] = round(float(out["beside_p99_ms"]) / float(out["alone_p99_ms"]), 2)  # type: ignore[arg-type]
        print(json.dumps(out), flush=True)
        return out
    finally:
        for pid in pods:
            try:
                await runtime.remove_sandbox(pid)
            except Exception as e:  # a bench leaves nothing behind, but reports what it could not remove
                print(f"cannot remove {pid}: {e}", file=sys.stderr)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--spinners", type=int, default=2)
    p.add_argument("--execs", type=int, default=40)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument(
        "--quiet-cpu-request",
        type=int,
        default=None,
        metavar="MILLICPU",
        help="the quiet pod's requests.cpu (its CPU weight when confined; default: none, "
        "the same weight as the spinners)",
    )
    args = p.parse_args()
    if os.geteuid() != 0:
        print("run as root: the confined configuration needs cgroups and the jail", file=sys.stderr)
        return 1
    print(
        json.dumps(
            {
                "bench": "machine",
                "cpus": os.cpu_count(),
                "kernel": platform.release(),
                "python": platform.python_version(),
                "loadavg": os.getloadavg(),
            }
        ),
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="noisy-vms-") as tmp:
        data = Path(tmp)
        layout = OciLayout(data / "oci")
        layout.add(busybox_image(), IMAGE)
        subprocess.run(
            [CLI, "image", "import", "--data-dir", str(data), str(layout.root)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        kernels = KernelRegistry(data / "kernels", agent_binary())
        rows = [asyncio.run(configuration(name, data, kernels, args)) for name in ("confined", "unconfined")]
    print(
        "\n| VMs | quiet alone p50 / p99 ms | beside spinners p50 / p99 ms | ratio p50 / p99 |\n"
        "|---|---|---|---|",
        file=sys.stderr,
    )
    for r in rows:
        print(
            f"| {r['config']} | {r['alone_p50_ms']} / {r['alone_p99_ms']} | {r['beside_p50_ms']} / "
            f"{r['beside_p99_ms']} | {r['ratio_p50']} / {r['ratio_p99']} |",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
